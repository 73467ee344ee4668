# Cluster execution: which rules run on the submitting host, and job grouping.
