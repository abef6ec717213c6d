"""`ccmim-export-timm` from a checkout: `python tools/export_timm.py --help`.

The program lives in `keras_ccmim.cli.export_timm` (its flags and docs).
"""

from keras_ccmim.cli import export_timm

if __name__ == "__main__":
    export_timm.run()
