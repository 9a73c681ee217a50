"""The environment: data types and schema (`types`), layout (`layout`), reward (`reward`), step (`core`).

See `pgjax.env.core` for the step and `pgjax.env.types` for the observation / action schema.
"""

from pgjax.env.core import WARM_START_METHODS, Env, make, scaled_grid
from pgjax.env.layout import Layout, build_layout
from pgjax.env.reward import Outcome, default_reward
from pgjax.env.types import (ActionColumn, ActionSchema, Box, EnvParams, EnvState, ObservationSchema,
                             ObservedFeature)

__all__ = ["WARM_START_METHODS", "ActionColumn", "ActionSchema", "Box", "Env", "EnvParams", "EnvState", "Layout",
           "ObservationSchema", "ObservedFeature", "Outcome", "build_layout", "default_reward", "make", "scaled_grid"]
