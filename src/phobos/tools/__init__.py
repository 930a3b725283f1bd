"""Thin argv builders and output parsers, one module per external tool."""
