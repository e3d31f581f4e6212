"""Hooks of the mlcost Airflow provider."""
