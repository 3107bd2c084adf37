"""Sample data shipped with instret, so the README's first command runs on any machine."""

from importlib.resources import files

#: 200 questions from the GSM8K train split (every 37th row; MIT, see LICENSE.gsm8k).
SAMPLE_GSM8K = files(__name__) / "gsm8k_sample.jsonl"
