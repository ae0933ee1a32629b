"""mmkeras.training"""
