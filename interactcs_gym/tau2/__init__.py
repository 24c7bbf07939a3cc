"""interactcs_gym.tau2"""
