"""``python -m cnnlab`` (also what ``torchrun -m cnnlab`` runs)."""

from cnnlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
