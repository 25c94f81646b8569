import os

import torch

# Deterministic, quiet, and polite on the 2-core CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))
torch.manual_seed(0)
