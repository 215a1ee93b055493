"""Framework runtimes behind one protocol; each framework is imported lazily when used."""
