"""What is measured from trajectories and curves: the summary of a run (entropy profiles, rates and their bootstrap
bands), decision times, the I-MMSE estimate, sampler convergence, the speciation study and the health checks.

Above ``seminfo.chain`` and ``seminfo.mixtures``; no files are read or written here.
"""
