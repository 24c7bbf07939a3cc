"""interactcs_gym.fds"""
