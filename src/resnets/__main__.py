"""``python -m resnets`` (also what ``torchrun -m resnets`` runs)."""

import sys

from .cli import main

sys.exit(main())
