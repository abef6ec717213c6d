"""`ccmim-convert-mae` from a checkout: `python tools/convert_mae.py --help`.

The program lives in `keras_ccmim.cli.convert_mae` (its flags and docs).
"""

from keras_ccmim.cli import convert_mae

if __name__ == "__main__":
    convert_mae.run()
