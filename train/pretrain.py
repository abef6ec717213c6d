"""`ccmim-pretrain` from a checkout: `python train/pretrain.py --workdir=runs/demo`.

The program lives in `keras_ccmim.cli.pretrain` (its flags and docs).
"""

from keras_ccmim.cli import pretrain

if __name__ == "__main__":
    pretrain.run()
