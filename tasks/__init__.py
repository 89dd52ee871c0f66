"""Thin Prefect tasks over the stepcoder library: one logical step or one side effect each."""
