"""mmkeras.data"""
