"""interactcs_gym.evaluation"""
