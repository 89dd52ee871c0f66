"""Program headers: trusted code an executor runs in each program's namespace before the program.

A header's lines are never counted as executed program lines, and it runs without a timer (it is ours). Pass one
as ``make_executor(..., header=APPS_HEADER)``; ``stepcoder exec`` does for ``apps`` datasets.
"""

# The import header APPS-style harnesses (APPS, CodeRL) put before every program, without numpy: the runner has
# the stdlib only. APPS 2404's canonical solution needs it (``List`` in a signature).
APPS_HEADER = """import sys
import time
import itertools
from itertools import accumulate, product, permutations, combinations
import collections
from collections import Counter, OrderedDict, deque, defaultdict, ChainMap
from functools import lru_cache
import math
from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2
import fractions
from typing import List, Tuple
import random
import heapq
from heapq import *
"""
