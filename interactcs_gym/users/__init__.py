"""interactcs_gym.users"""
