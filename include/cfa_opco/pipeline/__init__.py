"""What the DAGs' tasks do, kept out of dags/ so DAG files stay thin and parse fast."""
