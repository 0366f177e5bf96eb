"""Thin routers: validate, call one domain function, commit, return."""
