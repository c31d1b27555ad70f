import pytest
import torch

import envs  # noqa: F401  (registers the maml/ families)


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests are small; two threads avoid oversubscription on 2-core CI machines.
    torch.set_num_threads(2)
