"""The one compiled part: data/_jpegcrop.c, glue to libjpeg-turbo's partial decoding (``libjpeg-dev`` on Debian).
Optional: where it does not build, the training crops decode whole images instead (data/decode.py)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("resnets.data._jpegcrop", ["src/resnets/data/_jpegcrop.c"], libraries=["jpeg"],
                             optional=True)])
