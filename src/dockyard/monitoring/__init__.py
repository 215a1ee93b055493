"""Monitoring: request metrics, the prediction log, reference profiles, drift, delayed labels and
alerts. Below ``services`` (registration captures a profile) and above ``security``; no web code."""
