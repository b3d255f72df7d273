"""Airflow provider-style packages of the project (hooks, sensors, triggers)."""
