"""mmkeras.evaluation"""
