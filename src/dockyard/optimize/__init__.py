"""``dockyard optimize``'s conversions: a registered version compiled to a faster runtime (ONNX,
Treelite), the rows that prove it predicts the same, the comparison and the timing. The use case
that registers the result is ``dockyard.services.optimize``."""
