"""mmkeras.preprocessing"""
