"""Feature layer: declared user / item / context features encoded with training-only statistics (above data)."""

from genrec.features.encoders import UNSEEN, CategoryEncoder, NumericScaler, hash_cross
from genrec.features.jagged import Rows, SparseColumns
from genrec.features.ranking import FeatureConfig, RankingFeaturizer
from genrec.features.tables import FeatureTables, build_feature_tables

__all__ = [
    "UNSEEN",
    "CategoryEncoder",
    "FeatureConfig",
    "FeatureTables",
    "NumericScaler",
    "RankingFeaturizer",
    "Rows",
    "SparseColumns",
    "build_feature_tables",
    "hash_cross",
]
