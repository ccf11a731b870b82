"""Evaluators: one module per measure of a trained model, each with one entry point returning a dict."""
