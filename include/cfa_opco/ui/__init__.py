"""What the Airflow UI plugins read: one read-only query module per view (no Airflow import,
no pandas: the API server loads it)."""
