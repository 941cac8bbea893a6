"""Reference calculators (the labelling oracle) and failure-safe labelling."""
from pylal.reference.calculators import (CALCULATORS, PRESETS, LammpsCalculator, make_calculator,
                                         potential_dir)
from pylal.reference.labeling import Label, LabelFailure, label

__all__ = ["CALCULATORS", "PRESETS", "LammpsCalculator", "make_calculator", "potential_dir",
           "Label", "LabelFailure", "label"]
