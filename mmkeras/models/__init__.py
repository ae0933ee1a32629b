"""mmkeras.models"""
