"""mlcost's Airflow plugin: a cost listener and the Cost view (see ``cost_plugin``)."""
