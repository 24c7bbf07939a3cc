"""interactcs_gym.judges"""
