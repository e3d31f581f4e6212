"""Task decorators of the mlcost Airflow provider (``@task.metered``)."""
