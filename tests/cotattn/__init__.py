"""Tests for cotattn."""
