"""Two DAGs, one per team: the Cost view's server tests give a user access to one of them."""

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

for dag_id in ("team_a_train", "team_b_train"):
    with DAG(dag_id, schedule=None, tags=["mlcost-test"]):
        EmptyOperator(task_id="train")
