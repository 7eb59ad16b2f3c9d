"""Comparing runs over seeds: statistics (`stats`), reading run and sweep directories (`runs`), the report
(`report`)."""
