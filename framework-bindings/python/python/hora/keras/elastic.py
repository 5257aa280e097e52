"""hora.keras.elastic: not implemented (see hora.common.refused); every name raises."""

from hora.common.refused import elastic_getattr

__getattr__ = elastic_getattr("hora.keras.elastic")
