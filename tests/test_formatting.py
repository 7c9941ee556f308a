import math

import numpy as np
import pandas as pd

from ncstudy.outputs.formatting import value_text


def test_missing_values_are_none_floats_keep_their_digits_and_the_rest_is_str():
    for value in (None, math.nan, np.float64("nan"), pd.NA):
        assert value_text(value) == "none"
    assert value_text(0.0123456) == "0.0123"  # report labels, progress lines: 3 significant digits
    assert value_text(0.0123456, 4) == "0.01235"  # table label cells
    assert value_text(np.float64(100.0)) == "100"
    assert value_text(100) == "100" and value_text("L_W") == "L_W" and value_text(True) == "True"
    assert value_text([0.5, None]) == "[0.5, None]"
