"""PPO training on DeepSpeed. Import the submodules directly; this package file stays light."""
