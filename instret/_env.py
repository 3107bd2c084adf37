"""Process settings applied before any heavy library is imported.

litellm fetches a model-price map from the internet at import unless told to use its bundled
copy, and Chroma sends telemetry; instret must never reach for the network on its own.
"""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
