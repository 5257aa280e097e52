"""Refused until hora has elastic training (see hora.common.refused)."""

from hora.common.refused import elastic_message

raise ImportError(elastic_message("hora.torch"))
