"""Tests for attncore."""
