"""hora.tensorflow.keras: the same API as ``hora.keras`` (Horovod's ``horovod.tensorflow.keras``)."""

from hora.keras import *  # noqa: F401,F403
from hora.keras import __all__  # noqa: F401
from hora.tensorflow.keras import callbacks  # noqa: F401
