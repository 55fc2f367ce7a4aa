"""Tests of the offline emulator (kkiai_pipeline.sandbox)."""
