#!/usr/bin/env python
"""Train the embedded toy prior (same as `sds3d train-prior`); see sds3d/priors/train_toy.py."""

from sds3d.priors.train_toy import main

if __name__ == "__main__":
    main()
