"""hfd scaled out: the same service on a Ray Serve cluster (``ray_app``).

Only ``ray_app``, ``replica``, ``ingress`` and ``metrics_hub`` import Ray, and nothing in the
single-box daemon imports this package: ``hfd serve`` without ``--ray`` never loads Ray
(``tests/unit/test_ray_isolation.py``). ``bridge`` (an HTTP request as plain data, run through an
ASGI app) and ``plan`` (a model's deployment options from hfd's settings) are Ray-free.
"""
