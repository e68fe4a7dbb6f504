"""Downstream evaluation: cached frozen features, a probe, and ACC/ASR."""
