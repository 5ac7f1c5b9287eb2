"""Tests for attnpo."""
