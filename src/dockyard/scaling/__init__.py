"""Scale-out: the ``ray`` backend, whose models run as Ray Serve replicas on a Ray cluster while
the serving processes in front keep every route, guard, metric and log of the local backend."""
