"""Thin Prefect task wrappers around aibatch's plain functions."""
