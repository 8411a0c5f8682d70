"""Amazon's ``aurora_dsql_sqlalchemy`` import name, backed by sqlalchemy-dsql.

Only for running Amazon's own test suite with our dialect swapped in
(``tests/peers/run_amazon.py --dialect ours``): it re-exports our objects under
Amazon's public names and adds nothing, so a test that fails through it fails
on our code.
"""

from sqlalchemy_dsql import create_dsql_engine

__all__ = ["create_dsql_engine"]
