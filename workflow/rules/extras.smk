# Studies beyond the paper: I-MMSE cross-estimate, decision statistics, step convergence, speciation.
