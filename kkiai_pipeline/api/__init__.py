"""The kkiai / Replicate predictions API client."""
