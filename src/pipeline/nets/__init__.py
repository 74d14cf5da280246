"""Networks: candidate operations, the supernet and the evaluation networks."""
